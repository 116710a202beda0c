"""Enqueue a few tasks; `gatorapp worker -A tasks` runs them."""

from tasks import add, send_welcome_email

handle = add.delay(2, 3)
print(f"queued add(2, 3) as {handle.id}")

for user_id in (1, 2, 3):
    send_welcome_email.delay(user_id)
print("queued 3 welcome emails")

# Held in the queue for 60 s before any worker may run it.
later = send_welcome_email.options(delay_by=60).delay(4)
print(f"queued a welcome email for user 4, due in 60 s: {later.id}")
