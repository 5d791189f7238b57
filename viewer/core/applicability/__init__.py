"""Is this stack something the model was made for? (MODEL.md section 7, issue 10 item 2)

``assess_applicability(stack, hu, ...)`` answers in scope / in scope with caution / out of scope with
reasons and codes, from the header (modality, localizer, orientation, geometry against the model's
trained range, contrast agent) and the pixels (a head-sized skull ring around brain-density tissue,
no contrast-vessel signature, image noise within the noise the model was trained on). The engine calls
it before every run: refused stacks are never run.
"""

from viewer.core.applicability.check import assess_applicability
from viewer.core.applicability.codes import (
    Applicability,
    OutOfScopeError,
    Scope,
    ScopeCode,
    ScopeReason,
    TrainedRange,
    parse_trained_range,
)
from viewer.core.applicability.header import ScopeTags, read_scope_tags
from viewer.core.applicability.noise import noise_limit_hu

__all__ = [
    "Applicability",
    "OutOfScopeError",
    "Scope",
    "ScopeCode",
    "ScopeReason",
    "ScopeTags",
    "TrainedRange",
    "assess_applicability",
    "noise_limit_hu",
    "parse_trained_range",
    "read_scope_tags",
]
