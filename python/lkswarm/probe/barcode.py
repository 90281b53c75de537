"""Frame identity for the probe tier: a 32-cell barcode drawn into the top of each video frame.

Theory of operation
-------------------
A probe publisher draws, into the luma plane of every frame it captures, a band
of 2 rows x 16 columns of black or white cells carrying 32 bits::

    bits  0..7    publisher slot  (which probe publisher, 0..255)
    bits  8..23   frame counter   (per publisher, wraps at 65536)
    bits 24..31   CRC-8 (polynomial 0x07) of the three bytes above

Cells are sized as fractions of the frame (each is width/16 x height/9), so
the same reader works on any scaled copy with the same aspect ratio: at the
probe's 320x180 a cell is 20x20 pixels, and at a 2x downscale still 10x10.
The reader samples a 3x3 grid inside the central half of each cell and
classifies its mean luma; a cell that is neither clearly dark nor clearly
bright (a camera image, a ramp, the light tier's synthetic pattern) makes the
whole read fail, and the CRC rejects what remains, so a frame without a
barcode is almost never misread as one.

Nothing here relies on RTP timestamps or header extensions (the SFU may
rewrite both): identity travels inside the picture and survives whatever the
SFU does to the packets. The capture time of each (slot, counter) is kept
probe-side (publisher and subscriber probes share one process).
"""

from __future__ import annotations

from collections.abc import Sequence

COLUMNS = 16
ROWS = 2
BITS = COLUMNS * ROWS
CELL_HEIGHT_DIVISOR = 9  # a cell is height/9 tall: 20 px at 180 p
BLACK = 16  # video-range luma
WHITE = 235
DARK_MAX = 90  # a cell's mean luma at or below this reads as 0 ...
BRIGHT_MIN = 165  # ... at or above this as 1; anything between fails the read
COUNTER_MODULO = 1 << 16
MAX_SLOTS = 1 << 8
_SAMPLES_PER_AXIS = 3


def crc8(data: Sequence[int]) -> int:
    """CRC-8 with polynomial 0x07, initial value 0 (CRC-8/SMBUS)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_bits(slot: int, counter: int) -> list[int]:
    """The 32 cell values (MSB first, row-major) for one frame."""
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot {slot} outside 0..{MAX_SLOTS - 1}")
    counter %= COUNTER_MODULO
    payload = [slot, counter >> 8, counter & 0xFF]
    word = (slot << 24) | (counter << 8) | crc8(payload)
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def decode_bits(bits: Sequence[int]) -> tuple[int, int] | None:
    """(slot, counter) from 32 cell values, or None when the CRC does not match."""
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    slot, counter, check = word >> 24, (word >> 8) & 0xFFFF, word & 0xFF
    if crc8([slot, counter >> 8, counter & 0xFF]) != check:
        return None
    return slot, counter


def _cell_box(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of cell ``index`` in a width x height picture."""
    row, column = divmod(index, COLUMNS)
    cell_h = height / CELL_HEIGHT_DIVISOR
    return (
        round(column * width / COLUMNS),
        round(row * cell_h),
        round((column + 1) * width / COLUMNS),
        round((row + 1) * cell_h),
    )


def band_height(height: int) -> int:
    """Rows of the picture the barcode covers (the rest is free for the test pattern)."""
    return round(ROWS * height / CELL_HEIGHT_DIVISOR)


def draw(luma: bytearray, width: int, height: int, stride: int, slot: int, counter: int) -> None:
    """Draws the barcode of (slot, counter) into a luma plane in place."""
    for index, bit in enumerate(encode_bits(slot, counter)):
        x0, y0, x1, y1 = _cell_box(index, width, height)
        run = bytes([WHITE if bit else BLACK]) * (x1 - x0)
        for y in range(y0, y1):
            start = y * stride + x0
            luma[start : start + len(run)] = run


def read(luma: bytes | bytearray | memoryview, width: int, height: int, stride: int) -> tuple[int, int] | None:
    """(slot, counter) of a decoded luma plane, or None when there is no readable barcode."""
    if width < COLUMNS * 4 or height < CELL_HEIGHT_DIVISOR * 4:
        return None
    bits: list[int] = []
    for index in range(BITS):
        x0, y0, x1, y1 = _cell_box(index, width, height)
        # Sample the central half of the cell: codec ringing and scaling blur live at the edges.
        qx, qy = (x1 - x0) / 4, (y1 - y0) / 4
        total = 0
        for sy in range(_SAMPLES_PER_AXIS):
            y = int(y0 + qy + sy * 2 * qy / (_SAMPLES_PER_AXIS - 1))
            row = y * stride
            for sx in range(_SAMPLES_PER_AXIS):
                total += luma[row + int(x0 + qx + sx * 2 * qx / (_SAMPLES_PER_AXIS - 1))]
        mean = total / (_SAMPLES_PER_AXIS * _SAMPLES_PER_AXIS)
        if mean <= DARK_MAX:
            bits.append(0)
        elif mean >= BRIGHT_MIN:
            bits.append(1)
        else:
            return None
    return decode_bits(bits)
