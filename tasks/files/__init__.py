"""Files: FITS cards and files, the HDF5 archive, manifests, checks, atomic publication."""
