"""The public transparency page: the published liabilities root next to the funds held; proof check."""

from django.shortcuts import render

from accounts.selectors import audit_checkpoints_published
from escrow import liabilities
from escrow.forms import ProofUploadForm
from escrow.models import LiabilityPublication

MAX_PROOF_BYTES = 256 * 1024


def transparency(request):
    latest = []
    for currency in sorted(set(LiabilityPublication.objects.values_list("currency", flat=True))):
        latest.append(LiabilityPublication.objects.filter(currency=currency).first())
    form = ProofUploadForm(request.POST or None, request.FILES or None)
    result = None
    if request.method == "POST" and form.is_valid():
        result = liabilities.proof_verify(proof_text=form.cleaned_data["proof"].read(MAX_PROOF_BYTES))
    return render(
        request,
        "escrow/transparency/index.html",
        {
            "publications": latest,
            "form": form,
            "result": result,
            "audit_checkpoints": audit_checkpoints_published(),
        },
    )
