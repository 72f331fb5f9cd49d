"""physdiff: denoising diffusion probabilistic models for physicists, checked against theory."""

from .config import Config, config_from_dict, load_config
from .errors import PhysdiffError
from .run import LoadedRun
from .schedule import Schedule, make_schedule
from .training import train

__version__ = "0.1.0"
__all__ = ["Config", "LoadedRun", "PhysdiffError", "Schedule", "config_from_dict", "load_config", "make_schedule",
           "train"]
