"""Chat channels: each parses its platform's payloads, calls one service use case, renders."""
