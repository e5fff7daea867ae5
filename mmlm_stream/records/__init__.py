"""The ground floor: the published record schemas and the vocabulary of results every layer
speaks.
"""
