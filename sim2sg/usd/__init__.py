"""USD: the only part of sim2sg that imports pxr."""
