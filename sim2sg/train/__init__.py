"""sim2sg.train"""
