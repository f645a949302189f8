"""sim2sg.model"""
