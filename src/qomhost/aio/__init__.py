"""qomhost.aio"""
