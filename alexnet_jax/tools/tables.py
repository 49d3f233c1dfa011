"""Console tables and byte sizes, as the commands print them."""


def format_table(header: list[str], rows: list[list[str]],
                 right: set[int]) -> list[str]:
  """Aligned console columns; the columns in `right` are right-aligned."""
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  fmt = lambda r: '  '.join((c.rjust(w) if i in right else c.ljust(w))
                            for i, (c, w) in enumerate(zip(r, widths))).rstrip()
  return [fmt(header), fmt(['-' * w for w in widths])] + [fmt(r) for r in rows]


def format_bytes(n: float) -> str:
  """'30.1 MiB', '500.0 KiB', '12 B'."""
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024 or unit == 'GiB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024
  raise AssertionError('unreachable')
