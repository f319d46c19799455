"""qomhost.objects"""
