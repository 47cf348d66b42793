"""The synthetic data set of the demo (deploy/demo.sh) and of the training
tests (tests/python/test_train.py): four visually distinct classes, so a
context learned on a random-weight tiny tower can still separate them."""
import numpy as np


def shapes(rng, n, size=28):
    """n images (n, size, size, 3) uint8 and labels (n, 1): class 0 red disc, 1 green square,
    2 blue horizontal stripe, 3 yellow cross, on grey noise, all drawn from rng."""
    yy, xx = np.mgrid[0:size, 0:size]
    colours = np.array([[220, 40, 40], [40, 200, 60], [40, 70, 220], [230, 210, 40]])
    labels = rng.integers(0, 4, (n, 1)).astype(np.uint8)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        k = labels[i, 0]
        img = rng.normal(120, 12, (size, size, 3))
        cy, cx = rng.uniform(size * .35, size * .65, 2)
        r = rng.uniform(size * .2, size * .32)
        mask = [(yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                (abs(yy - cy) < r) & (abs(xx - cx) < r),
                abs(yy - cy) < r * .4,
                (abs(yy - cy) < r * .3) | (abs(xx - cx) < r * .3)][k]
        img[mask] = colours[k] + rng.normal(0, 10, (mask.sum(), 3))
        images[i] = img.clip(0, 255)
    return images, labels
