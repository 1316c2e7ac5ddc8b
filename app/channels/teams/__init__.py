"""The Microsoft Teams face: Adaptive Cards with Universal Actions (Action.Execute).

``cards`` holds the pure card builders; the playground renders the very same cards.
"""
