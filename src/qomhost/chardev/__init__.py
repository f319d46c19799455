"""qomhost.chardev"""
