//! Image import and guest rootfs building. Filled in by the images issue.
