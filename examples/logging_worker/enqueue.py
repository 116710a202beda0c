"""Queue a word count of each text file in texts/."""

from pathlib import Path

from tasks import count_words

texts = sorted(Path(__file__).parent.joinpath("texts").glob("*.txt"))
count_words.map(str(p) for p in texts)
print(f"queued {len(texts)} word counts")
