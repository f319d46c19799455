"""qomhost.testing"""
