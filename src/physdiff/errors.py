"""The one exception type for bad input: the CLI prints it as one line and exits with status 2."""


class PhysdiffError(Exception):
    """Bad input from the user (option, config, data file, run directory). The message names
    the offending value and what is allowed."""
