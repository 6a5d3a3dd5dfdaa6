"""Mail: messages queued in the database with the change that sends them (outbox.py), rendered
and sent by one worker thread (worker.py) through SMTP or, in development, a folder or the log
(transport.py)."""
