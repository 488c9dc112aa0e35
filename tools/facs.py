"""FACS vocabulary shared by every module: Action Unit codes and names,
MediaPipe blendshape names, and the emotion label set.

AU names follow Ekman, Friesen & Hager, *Facial Action Coding System* (2002).
The emotion names follow py-feat's output columns so existing notebooks work.
"""

from __future__ import annotations

AU_NAMES: dict[str, str] = {
    "AU01": "inner brow raiser",
    "AU02": "outer brow raiser",
    "AU04": "brow lowerer",
    "AU05": "upper lid raiser",
    "AU06": "cheek raiser",
    "AU07": "lid tightener",
    "AU09": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU28": "lip suck",
    "AU43": "eyes closed",
    "AU45": "blink",
}
AU_CODES: list[str] = list(AU_NAMES)

# MediaPipe FaceLandmarker's 52 blendshape categories, in the model's output order.
BLENDSHAPE_NAMES: list[str] = [
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
]

# py-feat's emotion column names, plus contempt (the eighth class).
EMOTIONS: list[str] = [
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt",
]
NEUTRAL = "neutral"  # the label of a face at rest, in every label set that has one

# FER2013 order used by the mini-Xception CNN (fer's emotion_model.hdf5).
FER2013_CLASSES: list[str] = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]

# Intensity on the FACS A-E scale mapped to 0-5 (0 = absent); occurrence threshold.
AU_OCCURRENCE_THRESHOLD = 1.0
