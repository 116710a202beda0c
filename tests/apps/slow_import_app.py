"""An app whose import takes a while, like a large project's."""

import os
import time

from gatorapp import App

time.sleep(float(os.environ.get("GATORAPP_TEST_IMPORT_DELAY", "1.0")))
app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"))
