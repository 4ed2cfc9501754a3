"""Class names of the supported datasets and the raw BTCV label ids mapped to the Synapse organs."""

__all__ = ["ACDC_CLASSES", "BTCV_TO_SYNAPSE", "SYNAPSE_CLASSES"]

SYNAPSE_CLASSES = ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach")
ACDC_CLASSES = ("rv", "myo", "lv")

# raw BTCV id -> Synapse 8-organ index (TransUNet order); every BTCV id is listed so that unlisted ones become 0
BTCV_TO_SYNAPSE: dict[int, int] = {
    0: 0,
    1: 7,
    2: 4,
    3: 3,
    4: 2,
    5: 0,
    6: 5,
    7: 8,
    8: 1,
    9: 0,
    10: 0,
    11: 6,
    12: 0,
    13: 0,
}
