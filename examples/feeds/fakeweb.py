"""A stand-in for HTTP, so the example needs no network.

``get("http://feeds.example/python.xml")`` answers with the file
``web/python.xml``. A file ``web/python.xml.down`` holding a number N makes the
next N requests for that feed answer 503, like a server that is briefly busy.
A feed with no file answers 404.
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
    down = WEB / f"{name}.down"
    if down.exists():
        left = int(down.read_text() or 0)
        if left > 0:
            down.write_text(str(left - 1))
            return Response(503)
    page = WEB / name
    if not page.exists():
        return Response(404)
    return Response(200, page.read_text())
