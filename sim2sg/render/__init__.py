"""sim2sg.render"""
