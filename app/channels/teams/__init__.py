"""Microsoft Teams face of twokey (Bot Framework); cards.py holds pure Adaptive Card builders."""
