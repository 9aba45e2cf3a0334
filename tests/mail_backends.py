"""Mail backends for the worker processes the tests start. They stand in for the SMTP server
(not for any of our code): messages land as files the test can count."""

import os
import time
import uuid
from pathlib import Path

from django.core.mail.backends.filebased import EmailBackend as FileBackend


class GatedFileBackend(FileBackend):
    """Writes each message to its own file, but first waits while the gate file named by
    $MAIL_GATE exists, so a test can catch a worker in the middle of sending."""

    def send_messages(self, email_messages):
        gate = os.environ.get("MAIL_GATE")
        if gate:
            Path(gate).with_suffix(".waiting").touch()
            while Path(gate).exists():
                time.sleep(0.05)
        sent = 0
        for message in email_messages:
            # One file per message: the stock backend names files by the second and appends.
            self._fname = os.path.join(self.file_path, f"{uuid.uuid4().hex}.log")
            self.stream = None
            self.open()
            try:
                self.write_message(message)
                self.stream.flush()
                sent += 1
            finally:
                self.close()
        return sent
