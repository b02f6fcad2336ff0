"""Tesla's open fleet-telemetry MQTT layout, as the emulated fleet speaks it with `--telemetry-format fleet-telemetry`.

Source read (github.com/teslamotors/fleet-telemetry, a reference, none of its code copied):
- `datastore/mqtt/README.md` and `datastore/mqtt/mqtt_payload.go` at commit e50a9fbb5c7cc278e80aa36ecda75114f19158d2:
  topics `<topic_base>/<VIN>/v/<Field>` (one message per field, the value alone, JSON-encoded) and
  `<topic_base>/<VIN>/connectivity` (`{"ConnectionId", "Status", "CreatedAt"}`, CreatedAt in RFC 3339);
  enum values are the protobuf enum names (`ShiftStateP`, `DetailedChargeStateCharging`), a location
  is `{"latitude", "longitude"}`, an invalid value is `null`; QoS and retain are one server setting,
  default QoS 0, not retained.
- `protos/vehicle_data.proto` at commit fb3a0dd6ffab1243cb434558b76722197705a23b: the `Field` enum
  (`UPSTREAM_FIELD_NAMES`, fields 1..257), the `ShiftState` and `DetailedChargeStateValue` enums.
- `protos/vehicle_connectivity.proto` at commit 7a3be80cc6a7fece8484898880d8526e6e3aaa2c: `ConnectivityEvent`.

The `<VIN>` level is the car's pseudonymous id, never a VIN (the project's rule: telemetry reveals
where people live). Values are the typed ones a car sends with `prefer_typed` (firmware 2024.38+);
without it, real cars send most numbers as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.topics import Delivery, TopicError, Topics, check_level

SOURCE_REPOSITORY = "https://github.com/teslamotors/fleet-telemetry"
SOURCE_COMMITS = {
    "protos/vehicle_data.proto": "fb3a0dd6ffab1243cb434558b76722197705a23b",
    "protos/vehicle_connectivity.proto": "7a3be80cc6a7fece8484898880d8526e6e3aaa2c",
    "datastore/mqtt/mqtt_payload.go": "e50a9fbb5c7cc278e80aa36ecda75114f19158d2",
}

# protos/vehicle_data.proto `enum Field`, values 1..257 in order (0 is Unknown), at the commit above
_FIELD_ENUM = """
DriveRail ChargeState BmsFullchargecomplete VehicleSpeed Odometer PackVoltage PackCurrent Soc DCDCEnable Gear
IsolationResistance PedalPosition BrakePedal DiStateR DiHeatsinkTR DiAxleSpeedR DiTorquemotor DiStatorTempR DiVBatR
DiMotorCurrentR Location GpsState GpsHeading NumBrickVoltageMax BrickVoltageMax NumBrickVoltageMin BrickVoltageMin
NumModuleTempMax ModuleTempMax NumModuleTempMin ModuleTempMin RatedRange Hvil DCChargingEnergyIn DCChargingPower
ACChargingEnergyIn ACChargingPower ChargeLimitSoc FastChargerPresent EstBatteryRange IdealBatteryRange BatteryLevel
TimeToFullCharge ScheduledChargingStartTime ScheduledChargingPending ScheduledDepartureTime PreconditioningEnabled
ScheduledChargingMode ChargeAmps ChargeEnableRequest ChargerPhases ChargePortColdWeatherMode ChargeCurrentRequest
ChargeCurrentRequestMax BatteryHeaterOn NotEnoughPowerToHeat SuperchargerSessionTripPlanner DoorState Locked FdWindow
FpWindow RdWindow RpWindow VehicleName SentryMode SpeedLimitMode CurrentLimitMph Version TpmsPressureFl TpmsPressureFr
TpmsPressureRl TpmsPressureRr SemitruckTpmsPressureRe1L0 SemitruckTpmsPressureRe1L1 SemitruckTpmsPressureRe1R0
SemitruckTpmsPressureRe1R1 SemitruckTpmsPressureRe2L0 SemitruckTpmsPressureRe2L1 SemitruckTpmsPressureRe2R0
SemitruckTpmsPressureRe2R1 TpmsLastSeenPressureTimeFl TpmsLastSeenPressureTimeFr TpmsLastSeenPressureTimeRl
TpmsLastSeenPressureTimeRr InsideTemp OutsideTemp SeatHeaterLeft SeatHeaterRight SeatHeaterRearLeft
SeatHeaterRearRight SeatHeaterRearCenter AutoSeatClimateLeft AutoSeatClimateRight DriverSeatBelt PassengerSeatBelt
DriverSeatOccupied SemitruckPassengerSeatFoldPosition LateralAcceleration LongitudinalAcceleration Deprecated_2
CruiseSetSpeed LifetimeEnergyUsed LifetimeEnergyUsedDrive SemitruckTractorParkBrakeStatus
SemitruckTrailerParkBrakeStatus BrakePedalPos RouteLastUpdated RouteLine MilesToArrival MinutesToArrival
OriginLocation DestinationLocation CarType Trim ExteriorColor RoofColor ChargePort ChargePortLatch Experimental_1
Experimental_2 Experimental_3 Experimental_4 GuestModeEnabled PinToDriveEnabled PairedPhoneKeyAndKeyFobQty
CruiseFollowDistance AutomaticBlindSpotCamera BlindSpotCollisionWarningChime SpeedLimitWarning ForwardCollisionWarning
LaneDepartureAvoidance EmergencyLaneDepartureAvoidance AutomaticEmergencyBrakingOff LifetimeEnergyGainedRegen DiStateF
DiStateREL DiStateRER DiHeatsinkTF DiHeatsinkTREL DiHeatsinkTRER DiAxleSpeedF DiAxleSpeedREL DiAxleSpeedRER
DiSlaveTorqueCmd DiTorqueActualR DiTorqueActualF DiTorqueActualREL DiTorqueActualRER DiStatorTempF DiStatorTempREL
DiStatorTempRER DiVBatF DiVBatREL DiVBatRER DiMotorCurrentF DiMotorCurrentREL DiMotorCurrentRER EnergyRemaining
ServiceMode BMSState GuestModeMobileAccessState Deprecated_1 DestinationName DiInverterTR DiInverterTF DiInverterTREL
DiInverterTRER Experimental_5 Experimental_6 Experimental_7 Experimental_8 Experimental_9 Experimental_10
Experimental_11 Experimental_12 Experimental_13 Experimental_14 Experimental_15 DetailedChargeState
CabinOverheatProtectionMode CabinOverheatProtectionTemperatureLimit CenterDisplay ChargePortDoorOpen ChargerVoltage
ChargingCableType ClimateKeeperMode DefrostForPreconditioning DefrostMode EfficiencyPackage
EstimatedHoursToChargeTermination EuropeVehicle ExpectedEnergyPercentAtTripArrival FastChargerType HomelinkDeviceCount
HomelinkNearby HvacACEnabled HvacAutoMode HvacFanSpeed HvacFanStatus HvacLeftTemperatureRequest HvacPower
HvacRightTemperatureRequest HvacSteeringWheelHeatAuto HvacSteeringWheelHeatLevel OffroadLightbarPresent
PowershareHoursLeft PowershareInstantaneousPowerKW PowershareStatus PowershareStopReason PowershareType
RearDisplayHvacEnabled RearSeatHeaters RemoteStartEnabled RightHandDrive RouteTrafficMinutesDelay
SoftwareUpdateDownloadPercentComplete SoftwareUpdateExpectedDurationMinutes SoftwareUpdateInstallationPercentComplete
SoftwareUpdateScheduledStartTime SoftwareUpdateVersion TonneauOpenPercent TonneauPosition TonneauTentMode
TpmsHardWarnings TpmsSoftWarnings ValetModeEnabled WheelType WiperHeatEnabled LocatedAtHome LocatedAtWork
LocatedAtFavorite SettingDistanceUnit SettingTemperatureUnit Setting24HourTime SettingTirePressureUnit
SettingChargeUnit ClimateSeatCoolingFrontLeft ClimateSeatCoolingFrontRight LightsHazardsActive LightsTurnSignal
LightsHighBeams MediaPlaybackStatus MediaPlaybackSource MediaAudioVolume MediaNowPlayingDuration
MediaNowPlayingElapsed MediaNowPlayingArtist MediaNowPlayingTitle MediaNowPlayingAlbum MediaNowPlayingStation
MediaAudioVolumeIncrement MediaAudioVolumeMax SunroofInstalled SeatVentEnabled RearDefrostEnabled
ChargeRateMilePerHour Deprecated_3
"""
UPSTREAM_FIELD_NAMES: tuple[str, ...] = tuple(_FIELD_ENUM.split())

# the proto's ShiftState and DetailedChargeStateValue enums, by name (the MQTT datastore sends `.String()`)
SHIFT_STATES = ("ShiftStateUnknown", "ShiftStateInvalid", "ShiftStateP", "ShiftStateR", "ShiftStateN",
                "ShiftStateD", "ShiftStateSNA")
DETAILED_CHARGE_STATES = ("DetailedChargeStateUnknown", "DetailedChargeStateDisconnected",
                          "DetailedChargeStateNoPower", "DetailedChargeStateStarting", "DetailedChargeStateCharging",
                          "DetailedChargeStateComplete", "DetailedChargeStateStopped")
CONNECTIVITY_STATUSES = ("UNKNOWN", "CONNECTED", "DISCONNECTED")  # vehicle_connectivity.proto ConnectivityEvent


class Shape(StrEnum):
    """The JSON shape of one field's value on its topic."""

    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"  # a string, one of the proto enum's value names
    LOCATION = "location"  # {"latitude": number, "longitude": number}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One fleet-telemetry field the emulator sends: its value's shape, unit, range and meaning."""

    shape: Shape
    description: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()  # for ENUM


# The fields the emulated cars send, each one a name of the upstream `Field` enum. Units are the
# ones real cars report: distance in miles and speed in mph (assumption: as the owner API and the
# third-party integrations read them; the proto states no units), temperatures in °C, power in kW.
FIELDS: dict[str, FieldSpec] = {
    "Soc": FieldSpec(Shape.NUMBER, "State of charge of the pack.", "percent", 0.0, 100.0),
    "BatteryLevel": FieldSpec(Shape.NUMBER, "State of charge as a percent of total capacity.", "percent", 0.0, 100.0),
    "EnergyRemaining": FieldSpec(Shape.NUMBER, "Energy left in the pack.", "kWh", 0.0, 250.0),
    "DetailedChargeState": FieldSpec(Shape.ENUM, "Charging state.", values=DETAILED_CHARGE_STATES),
    "ACChargingPower": FieldSpec(Shape.NUMBER, "AC charger input power.", "kW", 0.0, 50.0),
    "DCChargingPower": FieldSpec(Shape.NUMBER, "DC fast-charger power.", "kW", 0.0, 400.0),
    "Gear": FieldSpec(Shape.ENUM, "Gear (shift state).", values=SHIFT_STATES),
    "VehicleSpeed": FieldSpec(Shape.NUMBER, "Vehicle speed.", "mph", 0.0, 200.0),
    "Location": FieldSpec(Shape.LOCATION, "Position, rounded to about 1 km so that telemetry does not reveal a home."),
    "Odometer": FieldSpec(Shape.NUMBER, "Odometer.", "miles", 0.0, 2_000_000.0),
    "ModuleTempMax": FieldSpec(Shape.NUMBER, "Hottest battery module.", "degC", -60.0, 120.0),
    "InsideTemp": FieldSpec(Shape.NUMBER, "Cabin temperature.", "degC", -60.0, 90.0),
    "OutsideTemp": FieldSpec(Shape.NUMBER, "Outside temperature.", "degC", -60.0, 70.0),
    "Locked": FieldSpec(Shape.BOOLEAN, "Whether the car is locked."),
    "DriverSeatOccupied": FieldSpec(Shape.BOOLEAN, "Whether someone sits in the driver's seat."),
    "SoftwareUpdateInstallationPercentComplete": FieldSpec(
        Shape.NUMBER, "Progress of a software update being installed; 0 when none is.", "percent", 0.0, 100.0),
}
"""Field name -> what its value looks like; the published list a subscriber can check topics against."""

FIELD_DELIVERY = Delivery(qos=0, retain=False)  # periodic, superseded by the next report
# Connectivity events must arrive (QoS 1); the real server uses one QoS for everything (default 0).
CONNECTIVITY_DELIVERY = Delivery(qos=1, retain=False)
DEFAULT_BASE_LEVEL = "fleet-telemetry"
MILES_PER_KM = 1 / 1.609344


def default_base(topics: Topics) -> str:
    """The default topic base: `{prefix}/fleet-telemetry`, beside (not under) the versioned root."""
    return f"{topics.prefix}/{DEFAULT_BASE_LEVEL}"


def check_base(base: str) -> str:
    """Return `base` if every level of it is a safe topic level, else raise `TopicError`."""
    for level in base.split("/"):
        check_level(level, "telemetry base level")
    return base


def field_topic(base: str, vehicle_id: str, field: str) -> str:
    """`<base>/<vehicle>/v/<Field>`: where one field of one car is published."""
    return f"{base}/{vehicle_id}/v/{field}"


def connectivity_topic(base: str, vehicle_id: str) -> str:
    """`<base>/<vehicle>/connectivity`: where a car's connect and disconnect events are published."""
    return f"{base}/{vehicle_id}/connectivity"


def parse_topic(base: str, topic: str) -> tuple[str, str | None]:
    """(vehicle id, field name or None for connectivity) of a topic under `base`; `TopicError` otherwise."""
    if not topic.startswith(base + "/"):
        raise TopicError(f"topic {topic!r} is not under {base!r}")
    match topic[len(base) + 1:].split("/"):
        case [vid, "v", field] if field in FIELDS:
            return check_level(vid, "vehicle id"), field
        case [vid, "connectivity"]:
            return check_level(vid, "vehicle id"), None
    raise TopicError(f"topic {topic!r} is not a fleet-telemetry topic this fleet publishes")


def value_schema(spec: FieldSpec) -> dict[str, Any]:
    """The JSON Schema of a value of this shape (without the `null` an invalid reading would be)."""
    if spec.shape is Shape.BOOLEAN:
        return {"type": "boolean"}
    if spec.shape is Shape.ENUM:
        return {"type": "string", "enum": list(spec.values)}
    if spec.shape is Shape.LOCATION:
        return {
            "type": "object", "additionalProperties": False, "required": ["latitude", "longitude"],
            "properties": {"latitude": {"type": "number", "minimum": -90, "maximum": 90},
                           "longitude": {"type": "number", "minimum": -180, "maximum": 180}},
        }
    out: dict[str, Any] = {"type": "number"}
    if spec.minimum is not None:
        out["minimum"] = spec.minimum
    if spec.maximum is not None:
        out["maximum"] = spec.maximum
    return out


def field_schemas(id_base: str) -> dict[str, dict[str, Any]]:
    """Field name -> JSON Schema of its topic's payload; `null` is allowed, as real cars send it for invalid."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in FIELDS.items():
        unit = f" Unit: {spec.unit}." if spec.unit else ""
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{id_base}/fleet-telemetry/{name}.json",
            "title": name,
            "description": f"fleet-telemetry field {name}: {spec.description}{unit} `null` means invalid.",
            "anyOf": [value_schema(spec), {"type": "null"}],
        }
    return out


def connectivity_schema(id_base: str) -> dict[str, Any]:
    """The JSON Schema of a connectivity event, as the MQTT datastore publishes it."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{id_base}/fleet-telemetry/connectivity.json",
        "title": "connectivity",
        "description": "A car's connection came up or went down (CreatedAt: simulation time, RFC 3339, UTC).",
        "type": "object",
        "additionalProperties": False,
        "required": ["ConnectionId", "Status", "CreatedAt"],
        "properties": {
            "ConnectionId": {"type": "string", "minLength": 1},
            "Status": {"type": "string", "enum": list(CONNECTIVITY_STATUSES)},
            "CreatedAt": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        },
    }
