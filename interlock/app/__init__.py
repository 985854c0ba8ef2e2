"""The command line and launching runs."""
