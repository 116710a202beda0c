"""A Task subclass that compresses its payload with zlib."""

import zlib

from gatorapp import DecodeError, Task

# A msgpack envelope always starts with a map marker (0x80-0x8f, 0xde or 0xdf),
# so a payload starting with this byte can only be a compressed one.
COMPRESSED = b"Z"
MAX_DECOMPRESSED = 16 * 1024 * 1024


class SkinnyTask(Task):
    def serialize(self) -> bytes:
        data = super().serialize()  # the msgpack envelope, as bytes
        packed = COMPRESSED + zlib.compress(data, 9)
        # Tiny payloads grow when compressed: send those as they are.
        return packed if len(packed) < len(data) else data

    @classmethod
    def deserialize(cls, data: bytes) -> "SkinnyTask":
        if data[:1] == COMPRESSED:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data[1:], MAX_DECOMPRESSED)
            if inflater.unconsumed_tail:
                raise DecodeError(f"payload inflates past {MAX_DECOMPRESSED} bytes")
        # Plain envelopes (small ones, or ones queued before the switch) decode as usual.
        return super().deserialize(data)
