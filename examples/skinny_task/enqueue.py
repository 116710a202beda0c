"""Queue one digest with 50 articles and one small one."""

from tasks import sample_articles, send_digest

send_digest.delay("ada@example.com", sample_articles(50))
send_digest.delay("bob@example.com", sample_articles(1))
print("queued 2 digests")
