"""What every app uses and none owns. It imports none of our apps (only Django and libraries)."""
