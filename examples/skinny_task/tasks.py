"""Every task of this app travels as a SkinnyTask, on .delay() and in the worker."""

from pathlib import Path

from gatorapp import App

from skinnytask import SkinnyTask

DIGESTS = Path(__file__).parent / "digests"

app = App(task_class=SkinnyTask)


@app.task
def send_digest(email, articles):
    lines = [f"To: {email}", ""]
    lines += [f"* {a['title']} ({a['url']})" for a in articles]
    DIGESTS.mkdir(exist_ok=True)
    (DIGESTS / f"{email}.txt").write_text("\n".join(lines) + "\n")
    return len(articles)


def sample_articles(n):
    """Articles as a news site would send them: similar text, differing in detail."""
    return [
        {
            "title": f"Weekly release notes, part {i}",
            "url": f"https://news.example/articles/{1000 + i}/weekly-release-notes-part-{i}",
            "summary": (
                "What changed this week in the project: bug fixes, documentation and "
                f"performance work, with thanks to contributor number {i}."
            ),
            "tags": ["release", "weekly", "notes"],
        }
        for i in range(n)
    ]
