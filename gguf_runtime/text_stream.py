"""Token ids -> text as it becomes valid UTF-8, with stop strings: the one streaming rule that
Model.generate and the server's batched requests share."""

from __future__ import annotations


class TextStream:
    """push(token) -> the text now safe to show. A tail that could still grow into a stop string
    is held back; when a stop string appears, the text is cut before it and `stopped` is set.
    `text` is everything shown so far."""

    def __init__(self, tokenizer, stops: list[str]):
        self.decoder = tokenizer.stream_decoder()
        self.stops = [s for s in stops if s]
        self.pending, self.text, self.stopped = "", "", False

    def push(self, token: int) -> str:
        self.pending += self.decoder.push(token)
        cut = find_stop(self.pending, self.stops)
        if cut is not None:
            ready, self.pending, self.stopped = self.pending[:cut], "", True
        else:
            keep = stop_prefix_len(self.pending, self.stops)
            ready, self.pending = self.pending[:len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        self.text += ready
        return ready

    def flush(self) -> str:
        """What was held back (the stream ended without a stop string)."""
        ready, self.pending = self.pending + self.decoder.flush(), ""
        self.text += ready
        return ready


def find_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
