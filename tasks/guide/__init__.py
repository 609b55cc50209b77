"""Guide and focus mode: the pieces of a guide exposure, one job per module.

plan (spec against the instrument, before contact), detector (a camera's science
pixels in its raw frame), sources (the brightest stars of a first frame), stamps
(cutting and measuring them), timing (the cadence grid and latency figures), cycle
(one frame on every guide camera at once), archive (the per-exposure HDF5 file) and
guide_file (the FITS guide file and the manifest). No Prefect task runs per frame or
per stamp: the flow (flows/guide.py) drives these as plain asyncio.
"""
