"""Queue uploads' thumbnails first, then sign-ups' welcome emails.

python3 enqueue.py [EMAILS] [THUMBNAILS]
"""

import sys

from tasks import create_thumbnail, send_welcome_email

emails = int(sys.argv[1]) if len(sys.argv) > 1 else 5
thumbnails = int(sys.argv[2]) if len(sys.argv) > 2 else 5

create_thumbnail.map(f"photos/{i}.jpg" for i in range(thumbnails))
send_welcome_email.map(range(emails))
print(f"queued {thumbnails} thumbnails, then {emails} emails")
