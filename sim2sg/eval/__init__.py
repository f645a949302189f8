"""sim2sg.eval"""
