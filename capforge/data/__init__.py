"""Captcha data: labels, images, generation, checks, splitting, packing and the tf.data pipelines."""
