"""ImageNet (ILSVRC-2012) as extracted from its official files, read as a folder.

`train/<wnid>/*.JPEG` is an image folder already. The validation images come
either sorted into `val/<wnid>/` (an image folder too) or flat, `val/` holding
ILSVRC2012_val_00000001.JPEG ..., with their labels in one of:

  * `LOC_val_solution.csv` (the Kaggle copy): `ImageId,PredictionString`,
    the first word of the prediction string being the image's wnid;
  * the devkit's `ILSVRC2012_validation_ground_truth.txt`, one ILSVRC2012_ID
    (1..1000) per image in file-number order, read with the devkit's
    `meta.mat`, which maps each ILSVRC2012_ID to its wnid. Those IDs are the
    devkit's own order, not sorted wnids, so the file alone is refused.

Looked for in `data_dir`, the split folder, `data_dir/ILSVRC2012_devkit_t12/data`
and `data_dir/..`. Labels are always the sorted wnids (the order of TFDS
`imagenet2012` and torchvision), whichever file gave them. Class names for
people come from `LOC_synset_mapping.txt` or `meta.mat` where present.
"""

from pathlib import Path

from alexnet_jax.errors import UserError

LOC_SOLUTION = 'LOC_val_solution.csv'
LOC_SYNSETS = 'LOC_synset_mapping.txt'
GROUND_TRUTH = 'ILSVRC2012_validation_ground_truth.txt'
META = 'meta.mat'
DEVKIT = Path('ILSVRC2012_devkit_t12') / 'data'


def _find(root: Path, split: str, name: str) -> Path | None:
  for folder in (root, root / split, root / DEVKIT, root.parent):
    if (folder / name).is_file():
      return folder / name
  return None


def is_flat(split_dir: Path) -> bool:
  """A split folder holding its images directly, with no class folders."""
  entries = [p for p in split_dir.iterdir() if not p.name.startswith('.')]
  return (bool(entries) and not any(p.is_dir() for p in entries))


def flat_labels(root: Path, split: str) -> dict[str, str]:
  """File stem -> wnid for a flat split folder; UserError without labels."""
  solution = _find(root, split, LOC_SOLUTION)
  if solution:
    labels = {}
    for line in solution.read_text().splitlines()[1:]:
      image, _, prediction = line.partition(',')
      if prediction.split():
        labels[image.strip()] = prediction.split()[0]
    return labels
  truth, meta = _find(root, split, GROUND_TRUTH), _find(root, split, META)
  if truth and meta:
    wnids = {number: wnid for number, (wnid, _) in devkit_synsets(meta).items()}
    ids = [int(word) for word in truth.read_text().split()]
    unknown = sorted(set(ids) - set(wnids))
    if unknown:
      raise UserError(
          f'{truth} names ILSVRC2012_IDs that {meta} does not have '
          f'({", ".join(map(str, unknown[:5]))}); use the meta.mat of the '
          'same devkit (ILSVRC2012_devkit_t12).')
    return {f'ILSVRC2012_val_{index:08d}': wnids[number]
            for index, number in enumerate(ids, 1)}
  where = f'{root}, {root / split}, {root / DEVKIT} or {root.parent}'
  lacking = (f' ({GROUND_TRUTH} is at {truth}, but no {META} beside it: its '
             'IDs are in the devkit\'s order, which only meta.mat maps to '
             'wnids)' if truth else '')
  raise UserError(
      f'The split folder {root / split} holds images but no class folders, '
      f'and no labels for them were found{lacking}. Put {LOC_SOLUTION} (the '
      f'Kaggle copy), or the devkit\'s {GROUND_TRUTH} together with its '
      f'{META}, in {where}; or sort the images into {root / split}/<wnid>/.')


def devkit_synsets(meta: Path) -> dict[int, tuple[str, str]]:
  """ILSVRC2012_ID -> (wnid, words) of the devkit's 1000 classes (the leaf
  synsets of meta.mat, those without children)."""
  import scipy.io  # pylint: disable=import-outside-toplevel
  try:
    synsets = scipy.io.loadmat(meta, squeeze_me=True)['synsets']
    return {int(s['ILSVRC2012_ID']): (str(s['WNID']), str(s['words']))
            for s in synsets if int(s['num_children']) == 0}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'{meta} is not the devkit\'s meta.mat (a MATLAB file '
                    f'with a synsets table): {e}. Use the one in '
                    'ILSVRC2012_devkit_t12/data.') from None


def synset_words(root: Path, split: str) -> dict[str, str] | None:
  """wnid -> its words ('tench, Tinca tinca'), where a list is found."""
  mapping = _find(root, split, LOC_SYNSETS)
  if mapping:
    pairs = (line.split(maxsplit=1) for line in mapping.read_text().splitlines())
    return {p[0]: (p[1] if len(p) > 1 else '') for p in pairs if p}
  meta = _find(root, split, META)
  if meta:
    return dict(devkit_synsets(meta).values())
  return None


def check_wnids(root: Path, split: str, class_names) -> None:
  """Refuses train class folders that differ from the synset list found."""
  words = synset_words(root, split)
  if words is None or set(words) == set(class_names):
    return
  missing = sorted(set(words) - set(class_names))
  extra = sorted(set(class_names) - set(words))
  raise UserError(
      f'The class folders of {root / split} ({len(class_names)}) do not match '
      f'the wnid list beside them ({len(words)}, {LOC_SYNSETS} or {META}): '
      f'{len(missing)} listed without a folder ({", ".join(missing[:5])}) and '
      f'{len(extra)} folders not listed ({", ".join(extra[:5])}). Extract '
      'every class of ILSVRC2012_img_train.tar, or remove the list if this '
      'is not ImageNet.')
