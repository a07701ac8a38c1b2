"""What every SIFThinker component shares.

The image named here is only the default recorded in each component's spec; the pipeline sets every
task's image from the run config (``cfg.platform.image`` / ``cfg.platform.gpu_image``) in
``pipelines/platform.py``, the one place that picks images. ``install_kfp_package=False``: the images
install the ``sifthinker[platform]`` package, which pins kfp, so no step pip-installs at start.
"""

from sifthinker.config.platform_config import PlatformConfig

BASE_IMAGE = PlatformConfig().image
COMPONENT_OPTIONS = {"base_image": BASE_IMAGE, "install_kfp_package": False}
