"""TFDS's split slices (`train[:10000]`) for folder datasets."""

import re

# TFDS's slice syntax, for folders too: `train[:10000]`, `test[10%:20%]`.
_SLICE = re.compile(r'(?P<folder>[^\[\]]+)\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\]')


def split_folder(split: str) -> str:
  """The split folder that `split` reads ('train' for 'train[:10000]')."""
  match = _SLICE.fullmatch(split)
  return match['folder'] if match else split


def first_of_each_class(paths: dict, labels: dict, split: str):
  """A slice of a split folder, taken as TFDS takes a slice of a shuffled
  split: from the images in an order that visits the classes in turn (the
  first of each class, then the second, ...), so that `train[:N]` holds about
  N / classes images of each class, the first ones of each by name."""
  match = _SLICE.fullmatch(split)
  whole = match['folder']
  by_class = {}
  for path, label in zip(paths[whole], labels[whole]):
    by_class.setdefault(label, []).append(path)
  order = sorted((rank, label, path) for label, paths in by_class.items()
                 for rank, path in enumerate(paths))
  count = len(order)

  def bound(text, default):
    if not text:
      return default
    return (int(text[:-1]) * count // 100 if text.endswith('%')
            else int(text))

  chosen = order[bound(match['start'], 0):bound(match['stop'], count)]
  chosen.sort(key=lambda entry: (entry[1], entry[2]))  # Back to class order.
  return [path for _, _, path in chosen], [label for _, label, _ in chosen]
