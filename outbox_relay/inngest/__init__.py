"""inngest"""
