"""What the AI node stores back to the PACS for one analysed stack: the model task's DICOM outputs
(:mod:`viewer.core.tasks`; for ``slice_classification`` the AI Result SR and, when a class is positive,
the Key Object Selection of :mod:`viewer.core.airesults`), the same objects ``slicewise predict
--dicom-out`` and the viewer write.

Unlike the viewer's de-identified default, these objects go to the PACS the images came from, so they are
built *with identity* (the source's Patient and General Study modules, never logged): a PACS files them
under the same patient and study, and every workstation finds them there. Their UIDs are derived from the
model and the analysed slices, so storing them twice leaves one copy in the PACS.
"""

from __future__ import annotations

from pathlib import Path

from viewer.core.dicom.model import Stack
from viewer.core.errors import AiNodeError
from viewer.core.inference.results import StackPrediction


def write_result_objects(pred: StackPrediction, stack: Stack, task: str, folder: Path) -> list[Path]:
    """Write the result objects of ``pred`` (on ``stack``) into ``folder``, the AI Result SR first;
    returns their paths (files named ``<SOP Instance UID>.dcm``, written atomically, 0600)."""
    from viewer.core.airesults.identity import read_first_header, source_from_stack
    from viewer.core.tasks import task_named

    header = read_first_header(stack)
    if header is None:  # objects without the study's identity would not file into the study
        raise AiNodeError("The analysed stack's first header cannot be read again for the result objects")
    return task_named(task).dicom_outputs(pred, source_from_stack(stack, header), folder, True)
