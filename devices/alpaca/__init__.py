"""ASCOM Alpaca devices over HTTP, built like ``devices.archon``.

* :mod:`~devices.alpaca.protocol`: sans-IO requests and answer checks;
* :mod:`~devices.alpaca.imagebytes`: pure ImageBytes / JSON image decoders;
* :mod:`~devices.alpaca.client`: one ``httpx.AsyncClient`` per server, and
  :class:`Device`, the base of the device views;
* :mod:`~devices.alpaca.camera`: the Camera view;
* :mod:`~devices.alpaca.management`, :mod:`~devices.alpaca.discovery` (unicast only);
* :mod:`~devices.alpaca.errors`: the error tree (by vendor and by kind).
"""

from devices.alpaca.camera import AlpacaCamera, CameraCapabilities, CameraState, SensorType
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.discovery import DiscoveredServer, discover
from devices.alpaca.errors import (
    AlpacaActionNotImplementedError,
    AlpacaCameraFailedError,
    AlpacaConnectionError,
    AlpacaDeviceError,
    AlpacaDriverError,
    AlpacaError,
    AlpacaHttpError,
    AlpacaInvalidOperationError,
    AlpacaInvalidValueError,
    AlpacaInvalidWhileParkedError,
    AlpacaInvalidWhileSlavedError,
    AlpacaNotConnectedError,
    AlpacaNotImplementedError,
    AlpacaOperationCancelledError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
    AlpacaUnsupportedError,
    AlpacaValueNotSetError,
)
from devices.alpaca.imagebytes import DecodedImage, ElementType, ImageHeader
from devices.alpaca.protocol import DeviceAddress

__all__ = [
    "AlpacaActionNotImplementedError",
    "AlpacaCamera",
    "AlpacaCameraFailedError",
    "AlpacaClient",
    "AlpacaConnectionError",
    "AlpacaDeviceError",
    "AlpacaDriverError",
    "AlpacaError",
    "AlpacaHttpError",
    "AlpacaInvalidOperationError",
    "AlpacaInvalidValueError",
    "AlpacaInvalidWhileParkedError",
    "AlpacaInvalidWhileSlavedError",
    "AlpacaNotConnectedError",
    "AlpacaNotImplementedError",
    "AlpacaOperationCancelledError",
    "AlpacaProtocolError",
    "AlpacaTimeoutError",
    "AlpacaUnsupportedError",
    "AlpacaValueNotSetError",
    "CameraCapabilities",
    "CameraState",
    "DecodedImage",
    "Device",
    "DeviceAddress",
    "DiscoveredServer",
    "ElementType",
    "ImageHeader",
    "SensorType",
    "discover",
]

# --- the other device types (filterwheel.py ... covercalibrator.py), their refusals and waits:
# imported after __all__ above so that this block is only ever appended to.
from devices.alpaca.checks import (
    AlpacaCapabilityError,
    AlpacaDeviceFaultError,
    AlpacaValueError,
)
from devices.alpaca.covercalibrator import (
    AlpacaCoverCalibrator,
    CalibratorState,
    CoverCalibratorCapabilities,
    CoverState,
)
from devices.alpaca.dome import AlpacaDome, DomeCapabilities, ShutterState
from devices.alpaca.filterwheel import AlpacaFilterWheel, FilterSlot
from devices.alpaca.focuser import AlpacaFocuser, FocuserCapabilities
from devices.alpaca.observingconditions import AlpacaObservingConditions, Sensor
from devices.alpaca.rotator import AlpacaRotator, RotatorCapabilities
from devices.alpaca.safetymonitor import AlpacaSafetyMonitor
from devices.alpaca.switch import AlpacaSwitch, SwitchInfo
from devices.alpaca.telescope import (
    AlignmentMode,
    AlpacaTelescope,
    DriveRate,
    EquatorialSystem,
    PierSide,
    TelescopeCapabilities,
)

__all__ += [
    "AlignmentMode",
    "AlpacaCapabilityError",
    "AlpacaCoverCalibrator",
    "AlpacaDeviceFaultError",
    "AlpacaDome",
    "AlpacaFilterWheel",
    "AlpacaFocuser",
    "AlpacaObservingConditions",
    "AlpacaRotator",
    "AlpacaSafetyMonitor",
    "AlpacaSwitch",
    "AlpacaTelescope",
    "AlpacaValueError",
    "CalibratorState",
    "CoverCalibratorCapabilities",
    "CoverState",
    "DomeCapabilities",
    "DriveRate",
    "EquatorialSystem",
    "FilterSlot",
    "FocuserCapabilities",
    "PierSide",
    "RotatorCapabilities",
    "Sensor",
    "ShutterState",
    "SwitchInfo",
    "TelescopeCapabilities",
]
