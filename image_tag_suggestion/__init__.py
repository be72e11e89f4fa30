"""image_tag_suggestion: upload a photo, get the descriptive tags that fit it best.

The data flows image file -> decoded pixels (``images``) -> model input
(``preprocessing``) -> embedding (``encoder``) -> ranked tags (``scoring``,
``labels``), packaged as model bundles (``bundle``) and served through
``ImagePredictor`` / ``LabelPredictor`` (``predictors``), the CLI (``cli``)
and the Streamlit app (``main``).
"""

__version__ = "0.1.0"

import sys as _sys

from .bundle import DEFAULT_CONFIG, Bundle, BundleError, load_bundle  # noqa: E402
from .images import ImageError, load_image  # noqa: E402
from .predictors import ImagePredictor, LabelPredictor  # noqa: E402
from .scoring import Tag  # noqa: E402
from . import predictors as predictor  # noqa: E402

# The original app's code imports ``image_tag_suggestion.predictor``: the same module object
# as ``predictors``, under the old name (an alias, not a copy).
_sys.modules[__name__ + ".predictor"] = predictor

__all__ = [
    "DEFAULT_CONFIG", "Bundle", "BundleError", "ImageError", "ImagePredictor", "LabelPredictor", "Tag",
    "load_bundle", "load_image", "__version__",
]
