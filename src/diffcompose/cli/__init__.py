"""The ``diffcompose`` command line."""
