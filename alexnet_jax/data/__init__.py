"""The input pipeline (tf.data under TFDS): datasets, Sec. 2 and Sec. 4.1's
preprocessing, the built-in dataset, RGB statistics and down-sampling."""
