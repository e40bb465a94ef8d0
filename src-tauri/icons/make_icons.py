"""Draws the app icon (three connected nodes on a rounded square) as RGBA PNGs.

Run: python3 make_icons.py (writes 32x32.png, 128x128.png, 128x128@2x.png, icon.png).
"""
import math
import struct
import zlib


def png(path, size):
    def inside_rounded(x, y, r):
        cx = min(max(x, r), size - r)
        cy = min(max(y, r), size - r)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

    nodes = [(0.27, 0.30), (0.73, 0.30), (0.50, 0.72)]
    rad = 0.11 * size
    rows = []
    for j in range(size):
        row = bytearray([0])
        for i in range(size):
            x, y = i + 0.5, j + 0.5
            if not inside_rounded(x, y, 0.2 * size):
                row += bytes((0, 0, 0, 0))
                continue
            t = y / size
            r, g, b = int(40 + 30 * t), int(60 + 40 * t), int(140 + 60 * t)
            for (a, bb) in [(0, 2), (1, 2)]:
                x1, y1 = nodes[a][0] * size, nodes[a][1] * size
                x2, y2 = nodes[bb][0] * size, nodes[bb][1] * size
                dx, dy = x2 - x1, y2 - y1
                u = max(0, min(1, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)))
                d = math.hypot(x - (x1 + u * dx), y - (y1 + u * dy))
                if d < 0.035 * size:
                    r, g, b = 220, 230, 255
            for (nx, ny) in nodes:
                if math.hypot(x - nx * size, y - ny * size) < rad:
                    r, g, b = 255, 255, 255
            row += bytes((r, g, b, 255))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)))
        f.write(chunk(b"IDAT", raw))
        f.write(chunk(b"IEND", b""))


for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
    png(name, size)
