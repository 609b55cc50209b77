"""Read back a written FITS file and check its CHECKSUM and DATASUM.

astropy reports a bad checksum only as a warning; this turns it into an error so a
caller cannot miss it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning


class ChecksumError(ValueError):
    """A FITS file's CHECKSUM or DATASUM does not match its content."""


def verify_fits_checksums(path: Path) -> None:
    """Raise ChecksumError unless every HDU has matching CHECKSUM and DATASUM cards."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            # Compressed images keep their checksums on the stored table, which astropy
            # only shows with image decompression off.
            with fits.open(path, checksum=True, disable_image_compression=True) as hdul:
                for index, hdu in enumerate(hdul):
                    if "CHECKSUM" not in hdu.header or "DATASUM" not in hdu.header:
                        raise ChecksumError(f"{path}: HDU {index} has no CHECKSUM/DATASUM")
                    # Touch the data so astropy verifies DATASUM against it.
                    _ = hdu.data
        except AstropyUserWarning as exc:
            raise ChecksumError(f"{path}: {exc}") from exc
        except ChecksumError:
            raise
        except (TypeError, ValueError) as exc:
            # A truncated file: astropy cannot even map the data the header announces.
            raise ChecksumError(f"{path}: unreadable ({exc})") from exc
