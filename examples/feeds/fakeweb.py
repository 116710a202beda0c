"""A stand-in for HTTP, so the example needs no network.

``get("http://feeds.example/python.xml")`` answers with the file
``web/python.xml``. A file ``web/python.xml.down`` holding a number N makes the
first N requests for that feed answer 503, like a server that is briefly busy.
The requests made so far are counted in ``web/python.xml.hits`` (not part of
the example: delete it to start again), so running the example changes none of
its own files. A feed with no file answers 404.
"""

from dataclasses import dataclass
from pathlib import Path

WEB = Path(__file__).parent / "web"


@dataclass
class Response:
    status_code: int
    text: str = ""


def get(url: str) -> Response:
    name = url.rsplit("/", 1)[-1]
    down, hits = WEB / f"{name}.down", WEB / f"{name}.hits"
    if down.exists():
        seen = int(hits.read_text() or 0) if hits.exists() else 0
        hits.write_text(str(seen + 1))
        if seen < int(down.read_text() or 0):
            return Response(503)
    page = WEB / name
    if not page.exists():
        return Response(404)
    return Response(200, page.read_text())
