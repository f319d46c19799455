"""qomhost.cli"""
