"""An app whose backend answers status slowly, to interrupt `gatorapp status`."""

import time

from gatorapp import App
from gatorapp.backends.memory import MemoryBackend


class SlowStats(MemoryBackend):
    def stats(self, queue):
        time.sleep(30)
        return super().stats(queue)


app = App("slow://", backend_class=SlowStats)
