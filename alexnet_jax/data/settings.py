"""The input pipeline's typed settings (`DataConfig`)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """configs/default.py: `dataset`, `data_dir`, the splits, `image_size`,
  `batch_size` (global) and `input.*`; each is documented there."""
  dataset: str
  data_dir: str
  train_split: str
  eval_split: str
  image_size: int
  batch_size: int
  random_crop: bool
  random_flip: bool
  resize_ratio: float
  shuffle_buffer: int
  skip_bad_images: bool
  shapes_train_examples: int
  shapes_eval_examples: int
  pca_lighting: float
  normalization: str
  stats_file: str

  @property
  def square_size(self) -> int:
    """R: the side of the centre square that patches are taken from (Sec. 2)."""
    if self.random_crop:
      return round(self.image_size * self.resize_ratio)
    return self.image_size
