"""Tests run every task in-process: set the URL before the tasks module is imported."""

import os

os.environ["GATORAPP_URL"] = "memory://"
